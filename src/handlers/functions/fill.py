"""The blob fill function (FillFunction): copies a blob a request could not wait for, for up to 15 minutes."""

from handlers.functions import cold_start

with cold_start():
    from handlers.composition.aws import fill_handler
    from handlers.settings import AwsSettings

    handler = fill_handler(AwsSettings.from_environment())
