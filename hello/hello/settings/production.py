"""Production settings: no debug, a real secret key, TLS settings from the environment.

The stack serves plain HTTP on 127.0.0.1 behind Nginx; where TLS is terminated in front of
it, set DJANGO_HTTPS=true and the secure-cookie, redirect and HSTS settings follow, which is
what `manage.py check --deploy` asks for.
"""
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F401,F403
from .base import SECRET_KEY, SITE_DOMAINS
from .env import env_bool, env_int, env_list

DEBUG = False


def _require_real_secret_key(key):
    # The same bar as Django's security.W009, so that a key accepted here also passes
    # `check --deploy`.
    if not key:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set: the stack passes it as the file DJANGO_SECRET_KEY_FILE "
            "names (config/secrets/django_secret_key, which `inv up` creates)"
        )
    if key.startswith("django-insecure") or len(key) < 50 or len(set(key)) < 5:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not a real secret key: use at least 50 random characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))')"
        )


_require_real_secret_key(SECRET_KEY)

HTTPS = env_bool("DJANGO_HTTPS", True)
# Nginx sets X-Forwarded-Proto; trust it only because Gunicorn is reachable from Nginx alone.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", HTTPS)
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", HTTPS)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", HTTPS)
# Including subdomains and asking for preloading are decisions about the whole domain, made
# per host in config/stack.toml (hsts_include_subdomains, hsts_preload); where they are off,
# `check --deploy` is told so instead of warning on every deploy.
SILENCED_SYSTEM_CHECKS = [check for check, on in (("security.W005", SECURE_HSTS_INCLUDE_SUBDOMAINS),
                                                   ("security.W021", SECURE_HSTS_PRELOAD))
                          if SITE_DOMAINS and not on]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

if not env_list("DJANGO_ALLOWED_HOSTS"):
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is empty: list the host names the site answers to")

# Hashed file names let Nginx serve /static/ with a one-year cache.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}
