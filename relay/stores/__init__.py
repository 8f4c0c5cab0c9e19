"""The relay's stores: ports the routes use (`ports`), their NATS adapters (`nats_adapters`),
and opening them for the app's lifetime (`nats_open`)."""
