from django.contrib import admin
from django.urls import path

from calls import views

urlpatterns = [
    path("", views.console, name="console"),
    path("admin/", admin.site.urls),
]
