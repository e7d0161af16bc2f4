# The slearn image: the TypeScript CLI and workers, and the Python trainer (TRL + PEFT + torch;
# PyPI's torch wheel carries CUDA, so the same image trains on a GPU host, one process per GPU under
# torchrun). It is the GPU image: besides the full lock it installs the locked QLoRA extra
# (bitsandbytes, trainer/requirements-qlora.lock), which `make setup` never installs. Used by
# temporal-compose.yml for the workers; the model server in production is vLLM.
FROM node:20-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-pip && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY trainer/requirements.txt trainer/requirements.lock trainer/requirements-qlora.lock trainer/pyproject.toml trainer/
COPY trainer/slearn_trainer trainer/slearn_trainer
RUN python3 -m venv .venv && .venv/bin/pip install --no-cache-dir --no-deps -r trainer/requirements.lock \
 && .venv/bin/pip install --no-cache-dir --no-deps -r trainer/requirements-qlora.lock \
 && .venv/bin/pip install --no-cache-dir --no-deps -e trainer
COPY tsconfig.json ./
COPY src src
COPY bin bin
COPY schema schema
RUN npx tsc -p tsconfig.json
ENV SLEARN_HOME=/state
ENTRYPOINT []
CMD ["node", "bin/slearn.js", "worker"]
