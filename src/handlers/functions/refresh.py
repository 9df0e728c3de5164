"""The scheduled refresh function (RefreshFunction): keeps recently pulled tags fresh."""

from handlers.composition.aws import refresh_handler
from handlers.settings import AwsSettings

handler = refresh_handler(AwsSettings.from_environment())
