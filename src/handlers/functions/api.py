"""The registry API function (ApiFunction): the OCI pull API behind API Gateway."""

from handlers.functions import cold_start

with cold_start():
    from handlers.composition.aws_http import registry_handler
    from handlers.settings import AwsSettings

    handler = registry_handler(AwsSettings.from_environment())
