"""The dashboard (GET /dashboard): delivery at a glance for people, served by the service
itself: Jinja2 pages, inline SVG charts, one stylesheet, no JavaScript, no internet.

  views.py     the pages and their routes (Dashboard.routes())
  access.py    the API's access rule, the login's signed session cookie, CSRF
  figures.py   windows and figures from the store's kept counts (pure)
  charts.py    the SVG charts
  meanings.py  what providers' error codes mean
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from receiver.settings import Settings


def routes(settings: Settings) -> list[BaseRoute]:
    """The dashboard's routes; none when RECEIVER_DASHBOARD is off."""
    if not settings.dashboard:
        return []
    from receiver.dashboard.views import Dashboard  # loaded only when on: Jinja2, templates

    return Dashboard(settings).routes()
