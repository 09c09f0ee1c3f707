"""SMART on FHIR sign-in, token refresh and keyring storage."""
