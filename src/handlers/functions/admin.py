"""The rules admin function (AdminFunction): the IAM-guarded /admin/ routes."""

from handlers.functions import cold_start

with cold_start():
    from handlers.composition.aws_admin import admin_handler
    from handlers.settings import AwsSettings

    handler = admin_handler(AwsSettings.from_environment())
