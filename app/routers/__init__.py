"""HTTP only: parse, validate, call a service, shape the response."""
