"""The only place the providers' SDKs, boto3 (KMS) and provider HTTP are used; every call goes
through the kit's guard for its provider."""
