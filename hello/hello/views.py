from django.db import connections
from django.shortcuts import render


def index(request):
    return render(request, "hello/index.html", {"databases": list(connections)})
