"""The echo app (echo_app.py) as a FastCGI application, on flup's threaded WSGIServer.

Usage: python3 fcgi_echo.py HOST:PORT
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flup.server.fcgi import WSGIServer  # noqa: E402

from echo_app import application  # noqa: E402

if __name__ == "__main__":
    host, _, port = sys.argv[1].rpartition(":")
    # flup's fcgi.WSGIServer is the threaded one (multiplexed=False by default; a thread per
    # request). debug=False: a failing app gets flup's plain 500, not its HTML traceback page.
    WSGIServer(application, bindAddress=(host, int(port)), debug=False).run()
