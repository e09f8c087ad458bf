"""The decisions behind the middlewares: the rate limiter, the circuit breaker, the HTTP cache
(RFC 9111) and what a route does when its state store fails. Pure logic over `StateStore`;
no I/O of their own."""
