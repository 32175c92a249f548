"""Settings for the hello project, read only from the environment.

`dev` (the default of manage.py) runs anywhere with no configuration; `production` (the
default in the container) refuses to start without a real secret key.
"""
