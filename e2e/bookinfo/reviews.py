#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Bookinfo reviews: GET /reviews/N -> reviews of book N joined with the
stars from ratings (GET /ratings/N); GET /healthz. The version is only sent
in the X-Version header (bodies are identical across versions)."""

import argparse
import os
import sys

sys.dont_write_bytecode = True  # the app dir is mounted read-only
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bookinfo  # noqa: E402

TEXT = "text/plain; charset=utf-8"


class Reviews(bookinfo.Handler):
    ratings = None  # bookinfo.Upstream, set in main()

    def route(self, path, query):
        prefix, _, tail = path.partition("/reviews/")
        book_id = bookinfo.parse_id(tail) if prefix == "" else None
        if book_id is None:
            return 404, b"not found\n", TEXT, None
        try:
            ratings = self.ratings.get_json(f"/ratings/{book_id}")
            body = bookinfo.reviews_body(book_id, ratings)
        except (bookinfo.UpstreamError, AttributeError) as e:
            bookinfo.log(f"reviews: upstream ratings ({self.ratings.url}): {e!r}")
            return 502, f"upstream ratings: {e}\n".encode(), TEXT, None
        return 200, body, "application/json", None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=9080)
    ap.add_argument("--ratings", default="http://ratings:9080")
    ap.add_argument("--version", default="v1")
    ap.add_argument("--timeout", type=float, default=5.0, help="upstream timeout (s)")
    args = ap.parse_args()
    Reviews.ratings = bookinfo.Upstream("ratings", args.ratings, args.timeout)
    Reviews.extra_headers = {"X-Version": args.version}
    bookinfo.serve("reviews", Reviews, args.port,
                   f"(version={args.version} ratings={args.ratings})")


if __name__ == "__main__":
    main()
