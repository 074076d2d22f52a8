"""The only modules that talk to providers (aiosmtplib, the sendgrid and twilio SDKs), each call
through the kit's guard for its provider."""
