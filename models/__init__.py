"""What knows a fitted model: registering one (artifact, feature schema, baseline, metrics), MLflow,
validating input rows against its schema, predicting, and the metrics and profiles the batch run and
the monitor both read. Imports only `store`."""
