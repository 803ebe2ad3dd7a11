from urllib.parse import quote

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware
from django.http import HttpResponse
from django.shortcuts import resolve_url


class ConsoleLoginRequiredMiddleware(LoginRequiredMiddleware):
    """Every page needs a login; the API answers for itself (JSON 401/403, token auth).

    An htmx request whose session expired gets ``HX-Redirect`` so the whole page goes to the
    login form, instead of the login form being swapped into a progress bar.
    """

    def process_view(self, request, view_func, view_args, view_kwargs):
        if request.path_info.startswith("/api/"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)

    def handle_no_permission(self, request, view_func):
        if request.headers.get("HX-Request") == "true":
            login_url = resolve_url(settings.LOGIN_URL)
            current = request.headers.get("HX-Current-URL") or request.get_full_path()
            response = HttpResponse(status=200)
            response["HX-Redirect"] = f"{login_url}?next={quote(current)}"
            return response
        return super().handle_no_permission(request, view_func)
