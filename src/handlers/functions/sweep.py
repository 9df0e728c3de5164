"""The lifecycle sweep function (SweepFunction): forgets what nobody pulls, deletes orphaned bytes."""

from handlers.functions import cold_start

with cold_start():
    from handlers.composition.aws_scheduled import sweep_handler
    from handlers.settings import AwsSettings

    handler = sweep_handler(AwsSettings.from_environment())
