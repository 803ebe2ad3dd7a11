from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.contrib.staticfiles import finders
from django.core.exceptions import ValidationError
from django.http import FileResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from lepton_web.access import access_required
from lepton_web.jobs import BrokerUnavailable
from lepton_web.models import WorkerCheck
from lepton_web.selectors import dashboard_counts, database_health, job_get_for_user, system_health
from lepton_web.services import worker_checks_start_all


@require_GET
@access_required("dashboard", "view")
def dashboard(request):
    context = {
        "counts": dashboard_counts(),
        "health": system_health(),
        "worker_checks": WorkerCheck.objects.order_by("-created_at")[:4],
    }
    return render(request, "lepton_web/dashboard.html", context)


@require_GET
@access_required("dashboard", "view")
def dashboard_health(request):
    return render(request, "lepton_web/_health.html", {"health": system_health()})


@require_POST
@access_required("worker_check", "create")
def worker_checks_start(request):
    try:
        started = worker_checks_start_all(user=request.user)
    except (BrokerUnavailable, ValidationError) as exc:
        messages.error(request, exc.messages[0] if isinstance(exc, ValidationError) else str(exc))
    else:
        queues = " and ".join(job.queue for job in started)
        plural = "s" if len(started) > 1 else ""
        messages.success(request, f"Worker check{plural} queued on the {queues} queue{plural}.")
    return redirect("dashboard")


@require_GET
def job_progress(request, label: str, job_id: int):
    job = job_get_for_user(user=request.user, label=label, job_id=job_id)
    reload_on_finish = request.GET.get("reload") == "1"
    response = render(
        request,
        "components/_job_progress.html",
        {"job": job, "reload_on_finish": reload_on_finish},
    )
    if reload_on_finish and job.is_finished:
        response["HX-Refresh"] = "true"  # the page around the job changes once it ends
    return response


@login_not_required
@require_GET
def favicon(request):
    """/favicon.ico: browsers ask for it on every page (and the API docs page links none)."""
    icon = open(finders.find("favicon.ico"), "rb")  # noqa: SIM115 - FileResponse closes it
    response = FileResponse(icon, content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response


@login_not_required
@never_cache
@require_GET
def healthz(request):
    """Liveness and readiness for load balancers: 503 only when the database is unreachable.

    Anyone may ask, so an anonymous caller gets the states only: no error text (a database
    error names hosts and accounts), no broker address and no worker host names. A signed-in
    user gets the details the dashboard shows."""
    detailed = request.user.is_authenticated
    database = _health_part(database_health(), detailed)
    if not database["ok"]:
        return JsonResponse({"status": "unavailable", "database": database}, status=503)
    health = system_health()
    body = {
        "status": "ok" if health["ok"] else "degraded",
        "database": _health_part(health["database"], detailed),
        "broker": _health_part(health["broker"], detailed),
        "workers": [
            {
                **({"hostname": w["hostname"]} if detailed else {}),
                "queues": w["queues"],
                "online": w["online"],
            }
            for w in health["workers"]
        ],
        "queues": health["queues"],
    }
    return JsonResponse(body, status=200)


def _health_part(part: dict, detailed: bool) -> dict:
    if detailed:
        return part
    plain = {key: value for key, value in part.items() if key not in ("url", "detail")}
    return {**plain, "detail": "Connected." if part["ok"] else "Unreachable."}


def wants_json(request) -> bool:
    """Whether to answer ``request`` with JSON (the API, or a script asking for it) rather than
    a page; used by the error handlers and the middleware that refuse requests early."""
    return request.path_info.startswith("/api/") or "application/json" in request.headers.get(
        "Accept", ""
    )


def error_403(request, exception=None):
    detail = (
        str(exception) if exception and str(exception) else "You do not have permission to do this."
    )
    if wants_json(request):
        return JsonResponse({"detail": detail, "errors": {}}, status=403)
    return render(request, "403.html", {"detail": detail}, status=403)


def error_404(request, exception=None):
    detail = "This page does not exist. It may have been deleted, or the address is mistyped."
    # A view's own sentence ("This dataset is not assigned to you. ...") says more; an address
    # that matches no page carries the resolver's details, never shown.
    reason = exception.args[0] if exception is not None and exception.args else None
    if isinstance(reason, str) and reason:
        detail = reason
    if wants_json(request):
        return JsonResponse({"detail": "Not found.", "errors": {}}, status=404)
    return render(request, "404.html", {"detail": detail}, status=404)


def error_500(request):
    detail = "Something went wrong on the server. The error was logged; please try again."
    if wants_json(request):
        return JsonResponse({"detail": detail, "errors": {}}, status=500)
    return render(request, "500.html", {"detail": detail}, status=500)


def csrf_failure(request, reason=""):
    detail = (
        "Your form expired or was sent from another site, so it was not accepted. "
        "Reload the page and try again."
    )
    if wants_json(request):
        return JsonResponse({"detail": detail, "errors": {}}, status=403)
    return render(request, "403.html", {"detail": detail}, status=403)


def login_client_address(request) -> str:
    """The address a login attempt is counted against (django-axes): the connection's, or
    behind LOGIN_TRUSTED_PROXIES proxies the one the outermost of them saw, from the right of
    X-Forwarded-For (the entries left of it are whatever the client sent)."""
    from django.conf import settings

    proxies = settings.LOGIN_TRUSTED_PROXIES
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if proxies > 0 and len(forwarded) >= proxies:
        return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR", "")


def login_locked_out(request, original_response=None, credentials=None):
    """The login page when too many wrong passwords were given for this username from this
    address (django-axes): a plain sentence, status 429, nothing else said about the account."""
    from django.conf import settings
    from django.contrib.auth.forms import AuthenticationForm

    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    context = {
        "form": AuthenticationForm(request, initial={"username": username[:150]}),
        "locked_out": (
            f"Too many wrong passwords for this username from your address. Try again in "
            f"{minutes} minutes, or ask an admin to unlock it."
        ),
        "next": request.POST.get("next") or request.GET.get("next", ""),
    }
    return render(request, "registration/login.html", context, status=429)
