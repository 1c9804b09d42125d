"""`brushpen studio`: one server with the Gradio studio at / and the OpenAI-style REST API at /v1.

With `--api-key` (or `BRUSHPEN_API_KEY`) every /v1 route needs `Authorization: Bearer KEY` and the
studio's login page asks for the same key once. Binding beyond the loopback interface without a key
prints a warning: anyone who can reach the port could use the models. Models load lazily, on the
first request that needs them, so the server answers within seconds of starting.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys

from brushpen.config import apply_threads, get_settings, use_engine
from brushpen.generators.jobs_db import URL_ENV


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("studio", help="serve the studio UI and the REST API (OpenAI-style) on one port")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--api-key", default=None, help="require this key (default: $BRUSHPEN_API_KEY; none: open)")
    s.add_argument("--no-ui", action="store_true", help="serve the REST API only")
    s.add_argument("--threads", type=int, default=None, help="torch threads (default: $BRUSHPEN_THREADS or all)")
    s.add_argument("--no-worker", action="store_true",
                   help="serve the API and UI without running jobs: `brushpen worker` processes run them")
    s.add_argument("--jobs-url", default=None, metavar="URL",
                   help="the job store: postgresql://... shared by replicas and workers (default: "
                        "$BRUSHPEN_JOBS_URL, else SQLite under $BRUSHPEN_HOME)")
    s.add_argument("--engine", default=None, metavar="URL",
                   help="an OpenAI-compatible engine (llama-server, vLLM, Ollama, ...) whose models "
                        "serve as engine/ID: its API root, e.g. http://127.0.0.1:8080/v1 "
                        "(default: $BRUSHPEN_ENGINE_URL)")
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.set_defaults(func=run_studio)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:   # a host name: only "localhost" is known to stay on this machine
        return False


def build_server_app(api_key: str | None, ui: bool = True, worker: bool = True):
    """The FastAPI app with the studio mounted at / (when its package is present and `ui` is set);
    with `worker` it runs jobs too."""
    from fastapi.responses import RedirectResponse

    from brushpen.api import ApiSettings, create_app
    from brushpen.api.auth import LoginLimit, key_matches

    settings = ApiSettings.from_env(api_key)
    settings.batch_worker = worker
    app = create_app(settings)
    if ui:   # before Gradio is imported: some of its modules read the folder once, at import
        temp = get_settings().home / "gradio-tmp"
        temp.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("GRADIO_TEMP_DIR", str(temp))
    blocks = _studio_blocks(api_key) if ui else None
    if blocks is None:
        if app.docs_url:
            app.add_api_route("/", lambda: RedirectResponse(app.docs_url), include_in_schema=False)
        return app
    import gradio as gr

    from brushpen.studio_ui.i18n import I18N

    def login(_user: str, password: str) -> bool:
        return key_matches(password, api_key or "")

    # Routes added before the mount win over it, so /v1, /health and /docs stay the API's. I18N: the
    # labels in Korean too (Gradio's Settings panel picks the language).
    app = gr.mount_gradio_app(app, blocks, path="/", auth=login if api_key else None,
                              auth_message="Enter the studio's API key as the password (any user name).",
                              max_file_size=settings.max_upload_bytes, i18n=I18N)
    app.add_middleware(NoAllEndpoints)
    if api_key:   # a wrong login counts with the wrong keys, and a limited address gets a 429
        app.add_middleware(LoginLimit, limiter=app.state.failed_auth)
    return app


class NoAllEndpoints:
    """ASGI middleware: drops `all_endpoints` from the query of a page (not `/gradio_api/...`, which
    needs a login), so the API info Gradio embeds in a page, the login page included, never lists
    the studio's undocumented events."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and b"all_endpoints" in scope.get("query_string", b"") \
                and not scope["path"].startswith("/gradio_api/"):
            kept = [p for p in scope["query_string"].split(b"&") if not p.startswith(b"all_endpoints")]
            scope = {**scope, "query_string": b"&".join(kept)}
        await self.app(scope, receive, send)


def _studio_blocks(api_key: str | None):
    try:
        from brushpen.studio_ui import build_studio
    except ImportError as e:
        if e.name and e.name.startswith("brushpen.studio_ui"):
            logging.getLogger("brushpen").warning("the studio UI is not available (%s); serving the API only", e)
            return None
        raise
    return build_studio(api_key=api_key)


def run_studio(args: argparse.Namespace) -> int:
    import uvicorn

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api_key = args.api_key or os.environ.get("BRUSHPEN_API_KEY") or None
    if not is_loopback(args.host) and not api_key:
        print(f"warning: serving on {args.host} without an API key: anyone who can reach port {args.port} can "
              "use the models and the batch queue. Set --api-key or BRUSHPEN_API_KEY.", file=sys.stderr)
    if args.jobs_url:
        os.environ[URL_ENV] = args.jobs_url
    use_engine(args.engine)
    threads = apply_threads(args.threads)
    app = build_server_app(api_key, ui=not args.no_ui, worker=not args.no_worker)
    docs = "/docs" if app.docs_url else "/openapi.json behind the key"
    jobs = f"{app.state.jobs.describe()}, {'no worker' if args.no_worker else 'worker in process'}"
    print(f"brushpen studio on http://{args.host}:{args.port}  (API: /v1, docs: {docs}, torch threads: {threads}, "
          f"auth: {'on' if api_key else 'off'}, jobs: {jobs})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
