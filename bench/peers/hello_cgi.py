#!/usr/bin/python3
"""The Python hello CGI program of scripts/bench.sh."""
import sys

sys.stdout.write("Status: 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n")
