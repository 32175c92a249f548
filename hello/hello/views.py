import time

from django.db import connections
from django.http import HttpResponse
from django.shortcuts import render


def index(request):
    return render(request, "hello/index.html", {"databases": list(connections)})


def slow(request):
    """Answers after ?seconds= (at most 20): a request still in flight while traffic moves.
    Routed only with DJANGO_TEST_VIEWS=true."""
    try:
        seconds = min(max(float(request.GET.get("seconds", "5")), 0.0), 20.0)
    except ValueError:
        return HttpResponse("seconds must be a number\n", status=400)
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds:g}s\n", content_type="text/plain")


def scheme(request):
    """What Django believes of the request: secure or not, and from whom (the proxy chain
    decides both). Routed only with DJANGO_TEST_VIEWS=true."""
    return HttpResponse(f"secure={request.is_secure()} remote={request.META.get('HTTP_X_REAL_IP', '')}\n",
                        content_type="text/plain")
