"""The API's logic, kept out of the route modules: lookups of owned objects, ranking jobs, fused
rankings. Functions take a session (and the tenant) and raise `ApiError`; routes only route."""
