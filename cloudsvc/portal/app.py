"""The portal's Flask application: sign-in, sessions, CSRF, security headers and errors.

- **Sessions**: a random token in the ``asr_session`` cookie (Secure, HttpOnly,
  SameSite=Strict, Path=/); ``cloudsvc.operators`` keeps its hash, the operator and the
  session's CSRF token. Every page but sign-in and the static files needs a live session.
- **CSRF**: every POST carries the session's token in the form field ``csrf`` (sign-in: the
  token of the ``asr_signin`` cookie, a double submit); a missing or wrong token is refused
  with 403 before any service is asked.
- **Headers**: a CSP that allows only the portal's own script and style files (no inline
  script), ``frame-ancestors 'none'``, nosniff, no referrer, HSTS, no caching.
- **Errors**: every AsrError becomes the error page with its code, message, causes and
  recommended action, and the HTTP status of its kind (PermissionDenied 403, NotFound 404 ...).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from typing import Any

from flask import Flask, Response, g, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from asrclock import iso
from asrerrors import (
    AlreadyExists,
    AsrError,
    AuthError,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    SignInLimited,
    StateConflict,
    UsageError,
    ValidationFailed,
)
from cloudsvc.operators import Session
from cloudsvc.portal import actions, pages
from cloudsvc.roles import Role, allows
from cloudsvc.service import CloudService

log = logging.getLogger(__name__)
SESSION_COOKIE = "asr_session"
SIGNIN_COOKIE = "asr_signin"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
OPEN = {"signin", "static"}
_STATUS: list[tuple[type[AsrError], int]] = [
    (SignInLimited, 429), (NotAuthenticated, 401), (AuthError, 403), (NotFound, 404), (AlreadyExists, 409),
    (StateConflict, 409), (ValidationFailed, 409), (UsageError, 400),
]


def http_status(err: AsrError) -> int:
    for cls, status in _STATUS:
        if isinstance(err, cls):
            return status
    return 500


def create_app(svc: CloudService) -> Flask:
    here = os.path.dirname(__file__)
    app = Flask("cloudsvc.portal", template_folder=os.path.join(here, "templates"),
                static_folder=os.path.join(here, "static"))
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024, TEMPLATES_AUTO_RELOAD=False)
    app.jinja_env.autoescape = True
    app.jinja_env.filters["when"] = lambda t: iso(t) if t else "—"
    app.jinja_env.filters["duration"] = duration
    app.jinja_env.globals["allows"] = allows
    app.extensions["asr"] = svc

    @app.before_request
    def authenticate() -> Any:
        g.session = svc.operators.session(request.cookies.get(SESSION_COOKIE, ""))
        if request.endpoint in OPEN:
            return None
        if g.session is None:
            return redirect(url_for("signin", next=request.path))
        if request.method == "POST" and not _token_ok(request.form.get("csrf", ""), g.session.csrf):
            raise PermissionDenied("the request carries no valid CSRF token",
                                   causes=("The form was sent from another site, or from a page older than the "
                                           "session.",),
                                   action="Reload the page and submit the form again.")
        return None

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Strict-Transport-Security"] = "max-age=31536000"
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.errorhandler(AsrError)
    def asr_error(err: AsrError) -> tuple[str, int]:
        return render_template("error.html", err=err), http_status(err)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[str, int]:
        err = NotFound(f"{request.path} is not a page of the portal") if exc.code == 404 else UsageError(
            f"the request was refused: {exc.description}")
        return render_template("error.html", err=err), int(exc.code or 400)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[str, int]:
        log.exception("portal %s %s failed", request.method, request.path)
        return render_template("error.html", err=AsrError(f"internal error in {request.path}: {exc}")), 500

    @app.context_processor
    def context() -> dict[str, Any]:
        s: Session | None = g.get("session")
        return {"me": s, "csrf": s.csrf if s else "", "Role": Role}

    @app.route("/signin", methods=["GET", "POST"])
    def signin() -> Any:
        error: AsrError | None = None
        status = 200
        if request.method == "POST":
            if not _token_ok(request.form.get("csrf", ""), request.cookies.get(SIGNIN_COOKIE, "")):
                raise PermissionDenied("the sign-in form carries no valid CSRF token",
                                       action="Reload the sign-in page and sign in again.")
            try:
                token, session = svc.operators.sign_in(request.form.get("name", ""), request.form.get("password", ""))
            except AuthError as err:
                error, status = err, http_status(err)
            else:
                resp = redirect(_safe_next(request.args.get("next", "")))
                resp.set_cookie(SESSION_COOKIE, token, max_age=int(session.expires_at - svc.clock.now()),
                                secure=True, httponly=True, samesite="Strict", path="/")
                resp.delete_cookie(SIGNIN_COOKIE, path="/signin", secure=True, httponly=True, samesite="Strict")
                return resp
        # one token per browser (kept across reloads and tabs), made on its first visit
        form_token = request.cookies.get(SIGNIN_COOKIE, "") or secrets.token_urlsafe(32)
        resp = Response(render_template("signin.html", error=error, signin_csrf=form_token), status=status)
        resp.set_cookie(SIGNIN_COOKIE, form_token, secure=True, httponly=True, samesite="Strict", path="/signin")
        return resp

    @app.post("/signout")
    def signout() -> Any:
        svc.operators.sign_out(request.cookies.get(SESSION_COOKIE, ""))
        resp = redirect(url_for("signin"))
        resp.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")
        return resp

    pages.register(app, svc)
    actions.register(app, svc)
    return app


def _token_ok(sent: str, expected: str) -> bool:
    return bool(sent) and bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def _safe_next(target: str) -> str:
    """Only a path of this portal (never another site) after sign-in."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"
