"""The scheduled refresh function (RefreshFunction): keeps recently pulled tags fresh."""

from handlers.functions import cold_start

with cold_start():
    from handlers.composition.aws_scheduled import refresh_handler
    from handlers.settings import AwsSettings

    handler = refresh_handler(AwsSettings.from_environment())
