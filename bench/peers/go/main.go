// The Go peer of scripts/bench.sh: net/http (-http ADDR) or net/http/fcgi (-fcgi ADDR), both
// with the same handler: "Hello, world!" for any request, the request body back for POST /echo.
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/fcgi"
)

func handler(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/echo" {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(body)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "Hello, world!\n")
}

func main() {
	httpAddr := flag.String("http", "", "serve HTTP on this address")
	fcgiAddr := flag.String("fcgi", "", "serve FastCGI on this address")
	flag.Parse()
	mux := http.HandlerFunc(handler)
	switch {
	case *httpAddr != "":
		log.Fatal(http.ListenAndServe(*httpAddr, mux))
	case *fcgiAddr != "":
		listener, err := net.Listen("tcp", *fcgiAddr)
		if err != nil {
			log.Fatal(err)
		}
		log.Fatal(fcgi.Serve(listener, mux))
	default:
		log.Fatal("give -http ADDR or -fcgi ADDR")
	}
}
