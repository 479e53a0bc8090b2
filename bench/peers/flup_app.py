"""flup's threaded FastCGI server running app.py: python3 flup_app.py HOST:PORT"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flup.server.fcgi import WSGIServer  # noqa: E402

from app import application  # noqa: E402

host, port = sys.argv[1].rsplit(":", 1)
WSGIServer(application, bindAddress=(host, int(port))).run()
