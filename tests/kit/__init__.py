"""Tests of the runtime kit (libs/meshkit): unit tests apart from integration tests."""
