"""The smallest Django app with lembro sessions: a counter per visitor.

    python examples/django_app.py runserver 127.0.0.1:8002 --noreload

Sessions live in this process's memory, capped at 4 MiB and purged every 6 minutes. Run one
worker process (threads are fine); for several, use ``"STORE": "redis"``.
"""

from __future__ import annotations

import sys

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY="change-me",  # signs nothing of the session: the cookie holds only its id
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.sessions"],  # for manage.py clearsessions
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
    SESSION_ENGINE="lembro.django",
    LEMBRO={"MAX_SIZE": "4M", "INTERVAL": 360},
)


def count(request: HttpRequest) -> HttpResponse:
    n = request.session.get("n", 0) + 1
    request.session["n"] = n
    return HttpResponse(f"{n}\n", content_type="text/plain")


def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()  # removes the record and the cookie
    return HttpResponse("bye\n", content_type="text/plain")


urlpatterns = [path("", count), path("logout", logout)]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
