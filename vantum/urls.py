from django.contrib import admin
from django.urls import include, path

from calls import views
from calls.metrics_view import metrics

urlpatterns = [
    path("", views.console, name="console"),
    path("admin/", admin.site.urls),
    path("metrics", metrics, name="metrics"),
    path("telephony/", include("telephony.urls")),
]
