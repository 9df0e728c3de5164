"""The rules admin function (AdminFunction): the IAM-guarded /admin/ routes."""

from handlers.composition.aws_http import admin_handler
from handlers.settings import AwsSettings

handler = admin_handler(AwsSettings.from_environment())
