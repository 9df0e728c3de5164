"""The lifecycle sweep function (SweepFunction): forgets what nobody pulls, deletes orphaned bytes."""

from handlers.composition.aws import sweep_handler
from handlers.settings import AwsSettings

handler = sweep_handler(AwsSettings.from_environment())
