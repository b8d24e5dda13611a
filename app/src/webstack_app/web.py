"""The app factory: settings in, a WSGI application out."""

from __future__ import annotations

from bottle import Bottle, HTTPError

from webstack_app.config import Settings
from webstack_app.context import AppContext
from webstack_app.cross_site import refuse_cross_site_writes
from webstack_app.errors import handle_http_error, store_unavailable_as_503
from webstack_app.limits import limit_body
from webstack_app.logs import configure_logging
from webstack_app.metrics import RequestMetrics
from webstack_app.middleware import RequestContext
from webstack_app.routes import api, app, events, health


class JsonErrorBottle(Bottle):
    """A Bottle whose framework errors (404, 405, 500 ...) are JSON instead of HTML pages."""

    def default_error_handler(self, res: HTTPError) -> str:
        return handle_http_error(res)


def create_app(settings: Settings) -> RequestContext:
    """The whole app. Nothing here connects to Redis: that happens on first use, per process."""
    configure_logging(settings.log_level)
    bottle_app = JsonErrorBottle()  # catchall is on: an exception in a route becomes a 500
    ctx = AppContext.from_settings(settings)
    bottle_app.add_hook("before_request", refuse_cross_site_writes())
    bottle_app.add_hook("before_request", limit_body(settings.max_body_bytes))
    bottle_app.install(store_unavailable_as_503(ctx.metrics.session_store_errors))
    for routes in (app, api, health, events):
        routes.register(bottle_app, ctx)
    return RequestContext(
        RequestMetrics(bottle_app, ctx.metrics), settings.instance_name, ctx.proxies
    )
