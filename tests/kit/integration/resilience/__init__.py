"""Tests of the resilience guard and the outbound gRPC client kit."""
