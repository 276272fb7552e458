#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Bookinfo productpage: GET /productpage?id=N -> HTML page built from
details (GET /details/N) and reviews (GET /reviews/N); GET /healthz."""

import argparse
import os
import sys
from urllib.parse import parse_qs

sys.dont_write_bytecode = True  # the app dir is mounted read-only
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bookinfo  # noqa: E402

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"


class ProductPage(bookinfo.Handler):
    details = reviews = None  # bookinfo.Upstream, set in main()

    def route(self, path, query):
        if path != "/productpage":
            return 404, b"not found\n", TEXT, None
        book_id = bookinfo.parse_id(parse_qs(query).get("id", ["0"])[0])
        if book_id is None:
            return 404, b"unknown product id\n", TEXT, None
        data = {}
        for up, url in ((self.details, f"/details/{book_id}"),
                        (self.reviews, f"/reviews/{book_id}")):
            try:
                data[up.name] = up.get_json(url)
            except bookinfo.UpstreamError as e:
                bookinfo.log(f"productpage: upstream {up.name} ({up.url}{url}): {e}")
                return 502, f"upstream {up.name}: {e}\n".encode(), TEXT, None
        try:
            body = bookinfo.productpage_body(book_id, data["details"], data["reviews"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            bookinfo.log(f"productpage: bad upstream data for id {book_id}: {e!r}")
            return 502, f"bad upstream data: {e!r}\n".encode(), TEXT, None
        return 200, body, HTML, None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=9080)
    ap.add_argument("--details", default="http://details:9080")
    ap.add_argument("--reviews", default="http://reviews:9080")
    ap.add_argument("--timeout", type=float, default=5.0, help="upstream timeout (s)")
    args = ap.parse_args()
    ProductPage.details = bookinfo.Upstream("details", args.details, args.timeout)
    ProductPage.reviews = bookinfo.Upstream("reviews", args.reviews, args.timeout)
    bookinfo.serve("productpage", ProductPage, args.port,
                   f"(details={args.details} reviews={args.reviews})")


if __name__ == "__main__":
    main()
