<?php
// The PHP peer of scripts/bench.sh, under PHP-FPM: "Hello, world!" for any request, the
// request body back for POST /echo.
if (($_SERVER['DOCUMENT_URI'] ?? '') === '/echo') {
    header('Content-Type: application/octet-stream');
    echo file_get_contents('php://input');
} else {
    header('Content-Type: text/plain; charset=utf-8');
    echo "Hello, world!\n";
}
