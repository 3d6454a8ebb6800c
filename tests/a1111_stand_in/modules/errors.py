"""Follows modules/errors.py: report() prints the error and goes on."""
import traceback

reported = []


def report(message, *, exc_info=False):
    reported.append(message)
    print(message)
    if exc_info:
        traceback.print_exc()
