"""The echo app (echo_app.py) as a CGI program, on the standard library's wsgiref CGIHandler.

Usage: python3 cgi_echo.py (with the CGI variables in the environment and the body on stdin)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from wsgiref.handlers import CGIHandler  # noqa: E402

from echo_app import application  # noqa: E402

if __name__ == "__main__":
    CGIHandler().run(application)
