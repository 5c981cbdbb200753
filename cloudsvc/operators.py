"""Operators with roles: their credentials, portal passwords, portal sessions and the sign-in
rate limit. The only writer of ``operator_accounts``, ``portal_sessions``, ``signin_failures``
and of the operators' roles (``operators.role``; ``asr-cloudsvc init``'s first credential is
written by ``registrar.add_operator`` and is a Contributor).

Passwords are random (shown once by ``asr operator create``) and stored as Argon2id hashes
(argon2-cffi's defaults: memory-hard). A session is a random token in a cookie; the store holds
only its SHA-256, so a copy of the database signs nobody in. Everything lives in the metadata
store, not in memory, so any cloud service process sharing the vault can serve a signed-in
operator (design.md, Scale).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization

from asrclock import Clock
from asrerrors import AlreadyExists, NotAuthenticated, SignInLimited
from certs.pki import CertKey, key_to_pem, make_csr, new_key, sign_csr
from cloudsvc.naming import check_name
from cloudsvc.roles import Role
from cloudsvc.roles import parse as parse_role
from metastore.database import Database, Row

SESSION_S = 8 * 3600          # a session lasts a working day, then the operator signs in again
FAILURES_ALLOWED = 5          # wrong passwords in FAILURE_WINDOW_S before sign-in is refused
FAILURE_WINDOW_S = 15 * 60


@dataclass(frozen=True)
class Session:
    name: str
    role: Role
    csrf: str
    expires_at: float


@dataclass(frozen=True)
class Created:
    name: str
    role: Role
    password: str
    credential: dict[str, str]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Operators:
    def __init__(self, db: Database, clock: Clock, service_ca: CertKey, endpoint: str) -> None:
        self.db = db
        self.clock = clock
        self.ca = service_ca
        self.endpoint = endpoint
        self.hasher = PasswordHasher()

    def create(self, name: str, role_text: str) -> Created:
        """A new operator: a portal password and an ``asr`` credential, both with ``role``."""
        check_name("operator", name)
        role = parse_role(role_text)
        if name == "admin" or self.db.one("SELECT 1 FROM operator_accounts WHERE name=?", (name,)):
            raise AlreadyExists(f"operator {name!r} already exists", action="Choose another operator name.")
        password = secrets.token_urlsafe(18)
        key = new_key()
        cert = sign_csr(self.ca, make_csr(key, name), f"spiffe://asr/operator/{name}", days=3650)
        now = self.clock.now()
        with self.db.write() as conn:
            conn.execute("INSERT INTO operator_accounts(name, role, password_hash, created_at) VALUES (?,?,?,?)",
                         (name, role.value, self.hasher.hash(password), now))
            conn.execute("INSERT INTO operators(serial, name, created_at, role) VALUES (?,?,?,?)",
                         (format(cert.serial_number, "x"), name, now, role.value))
        credential = {"endpoint": self.endpoint, "service_ca_pem": self.ca.cert_pem.decode(),
                      "cert_pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
                      "key_pem": key_to_pem(key).decode()}
        return Created(name, role, password, credential)

    @staticmethod
    def credential_json(c: Created) -> str:
        return json.dumps(c.credential, indent=2)

    def role_of_certificate(self, serial: str) -> Role | None:
        row = self.db.one("SELECT role FROM operators WHERE serial=?", (serial,))
        return Role(row["role"]) if row is not None else None

    # ---- portal sign-in and sessions ---------------------------------------------------------
    def sign_in(self, name: str, password: str) -> tuple[str, Session]:
        """A new session (its cookie token and the session) for a right name and password.
        After FAILURES_ALLOWED wrong attempts in FAILURE_WINDOW_S the name is refused, right
        password or not, until the window has passed."""
        now = self.clock.now()
        failures = self.db.one("SELECT COUNT(*) AS n, MIN(at) AS first FROM signin_failures WHERE name=? AND at>?",
                               (name, now - FAILURE_WINDOW_S))
        assert failures is not None
        if int(failures["n"]) >= FAILURES_ALLOWED:
            wait = int(float(failures["first"]) + FAILURE_WINDOW_S - now) + 1
            raise SignInLimited(f"sign-in for {name!r} is refused for {wait} s after {FAILURES_ALLOWED} wrong "
                                "passwords", details=(f"retry_after={wait}",))
        row = self.db.one("SELECT * FROM operator_accounts WHERE name=?", (name,))
        if row is None or not self._verify(row, password):
            with self.db.write() as conn:
                conn.execute("INSERT INTO signin_failures(name, at) VALUES (?,?)", (name, now))
                conn.execute("DELETE FROM signin_failures WHERE at<=?", (now - FAILURE_WINDOW_S,))
            raise NotAuthenticated("the operator name or password is wrong",
                                   causes=("A typing error.", "The operator was never created on this service."),
                                   action="Sign in with the password 'asr operator create' printed, or ask a "
                                          "Contributor to create the operator.")
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        session = Session(name, Role(row["role"]), csrf, now + SESSION_S)
        with self.db.write() as conn:
            conn.execute("DELETE FROM signin_failures WHERE name=?", (name,))
            conn.execute("DELETE FROM portal_sessions WHERE expires_at<=?", (now,))
            conn.execute("INSERT INTO portal_sessions(token_hash, name, csrf, created_at, expires_at) "
                         "VALUES (?,?,?,?,?)", (_token_hash(token), name, csrf, now, session.expires_at))
        return token, session

    def _verify(self, row: Row, password: str) -> bool:
        try:
            return bool(self.hasher.verify(row["password_hash"], password))
        except (VerificationError, InvalidHashError):
            return False

    def session(self, token: str) -> Session | None:
        """The live session of a cookie token, or None (unknown, expired, signed out)."""
        if not token:
            return None
        row = self.db.one("SELECT s.*, a.role FROM portal_sessions s JOIN operator_accounts a ON a.name=s.name "
                          "WHERE s.token_hash=? AND s.expires_at>?", (_token_hash(token), self.clock.now()))
        return Session(row["name"], Role(row["role"]), row["csrf"], row["expires_at"]) if row else None

    def sign_out(self, token: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM portal_sessions WHERE token_hash=?", (_token_hash(token),))
