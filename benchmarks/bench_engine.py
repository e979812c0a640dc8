"""`wanserve bench engine` without the rest of the CLI's imports (for GPU machines that lack the server packages).

    PYTHONPATH=src python3 benchmarks/bench_engine.py --model wan2.1-t2v-14b --size 832x480 --frames 81 \
        --forward-size 1280x720x81 --out bench.json
"""

from wanserve.cli.bench import bench_app

if __name__ == "__main__":
    bench_app(["engine", *__import__("sys").argv[1:]])
