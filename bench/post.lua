-- wrk script: POST /echo with a 64 KiB body (the size from BENCH_BODY_BYTES, default 65536).
local size = tonumber(os.getenv("BENCH_BODY_BYTES") or "65536")
wrk.method = "POST"
wrk.path = "/echo"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = "application/octet-stream"
