"""The portal: a web console for the vault, served by ``asr-cloudsvc serve`` on
``portal_listen`` (see docs/design.md, Portal).

``app`` builds the Flask application (sign-in, sessions, CSRF, security headers, errors);
``pages`` holds the pages that read, ``actions`` the requests that change something, both
calling the domain services of the composition root under the roles of ``cloudsvc.roles``;
``charts`` draws the server-side SVG charts; ``server`` serves the application over HTTPS
with cheroot. Importing any of them starts nothing.
"""
