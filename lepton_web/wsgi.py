import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lepton_web.settings")
application = get_wsgi_application()

# Token-authenticated predict calls skip the middleware stack (models_app/fastpath.py).
from models_app.fastpath import PredictFastPath  # noqa: E402

application = PredictFastPath(application)
