# Shortcuts; the scripts are the source of truth (README lists them).
.PHONY: run test models bench bench-upstream bench-auth bench-cache bench-workflows bench-fairness bench-llm bench-realtime bench-vectors lint check-deploy
run:
	scripts/run.sh
test:
	scripts/test.sh
models:
	scripts/setup-models.sh
bench:
	bench/run-embeddings.sh
bench-upstream:
	bench/run-upstream.sh
bench-auth:
	bench/run-auth.sh
bench-cache:
	bench/run-cache.sh
bench-workflows:
	bench/run-workflows.sh
bench-fairness:
	bench/run-fairness.sh
bench-llm:
	bench/run-llm.sh
bench-realtime:
	bench/run-realtime.sh
bench-vectors:
	bench/run-vectors.sh
lint:
	cargo fmt --all -- --check && cargo clippy --workspace --all-targets -- -D warnings
check-deploy:
	scripts/check-deploy.sh
