"""Development settings: DEBUG on and a throwaway key unless the environment says otherwise."""
from .base import *  # noqa: F401,F403
from .env import env_bool, env_secret

DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = env_secret("DJANGO_SECRET_KEY") or "django-insecure-development-only-never-use-in-production"
