"""Two staff groups with separate permissions: editing prompts and reading transcripts."""

from django.db import migrations

GROUPS = {
    "Prompt editors": [
        ("agents", "promptversion", "edit_prompts", "Can edit and activate prompt versions"),
        ("agents", "promptversion", "view_promptversion", "Can view prompt version"),
        ("agents", "agentprofile", "view_agentprofile", "Can view agent profile"),
    ],
    "Transcript reviewers": [
        ("calls", "call", "review_transcripts", "Can read call transcripts"),
        ("calls", "call", "view_call", "Can view call"),
        ("calls", "call", "end_live_calls", "Can end calls in progress"),
        ("agents", "promptversion", "view_promptversion", "Can view prompt version"),
    ],
}


def create_groups(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    for group_name, permissions in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        for app_label, model, codename, name in permissions:
            # Meta permissions are created after migrations; create them now so the group has them.
            content_type, _ = ContentType.objects.get_or_create(app_label=app_label, model=model)
            permission, _ = Permission.objects.get_or_create(
                content_type=content_type, codename=codename, defaults={"name": name}
            )
            group.permissions.add(permission)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
        ("calls", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(create_groups, remove_groups)]
