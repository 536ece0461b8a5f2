"""The "Support" group: exactly the permissions support work needs (README, Security).

- view users: find whose connection a ticket is about; never change a user, a password
  or a permission;
- view and change Jira connections: change is what the admin actions need (Refresh now,
  Mark needs reconnect, Disconnect), each through the services and recorded as an event;
  the change form itself can never be saved;
- view connection events: the audit trail;
- view and delete login lockouts (axes AccessAttempt): lifting a lockout for a user who
  called in is support work; deleting an attempt is how axes clears it. Login history
  (AccessLog: every login's address and browser) stays with superusers.
"""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import migrations

SUPPORT = "Support"
PERMISSIONS = [
    ("accounts", "view_user"),
    ("integrations", "view_jiraconnection"),
    ("integrations", "change_jiraconnection"),
    ("integrations", "view_connectionevent"),
    ("axes", "view_accessattempt"),
    ("axes", "delete_accessattempt"),
]


def create_support_group(apps, schema_editor):
    # Permissions are made after all migrations ran; on a fresh database, make them now.
    for app_label in {app for app, _ in PERMISSIONS}:
        app_config = apps.get_app_config(app_label)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0, using=schema_editor.connection.alias)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=SUPPORT)
    wanted = [Permission.objects.get(content_type__app_label=app, codename=codename) for app, codename in PERMISSIONS]
    group.permissions.set(wanted)


def delete_support_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=SUPPORT).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("integrations", "0001_initial"),
        ("axes", "0010_accessattemptexpiration"),
    ]

    operations = [migrations.RunPython(create_support_group, delete_support_group)]
