"""Command line: `python -m fastnn train [options]` trains an MLP and reports test accuracy."""
import argparse
import sys
import time

import numpy as np

DEFAULTS = {"digits": {"hidden": "128,64", "epochs": 30, "batch_size": 32, "lr": 1e-3},
            "fashion-mnist": {"hidden": "512,256", "epochs": 10, "batch_size": 128, "lr": 1e-3}}


def _parser():
    parser = argparse.ArgumentParser(prog="python -m fastnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an MLP classifier and report its test accuracy")
    train.add_argument("--dataset", default="digits",
                       help="'digits' (embedded, the default), 'fashion-mnist' (apt-get install "
                            "dataset-fashion-mnist) or a .npz/.csv file")
    train.add_argument("--hidden", default=None,
                       help="comma-separated hidden layer sizes (default: 128,64 for digits, 512,256 otherwise)")
    train.add_argument("--activation", default="relu", help="hidden-layer activation (default relu)")
    train.add_argument("--optimizer", default="adam", help="sgd, adagrad, rmsprop, adam (default), adamw, radam, adan")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3)")
    train.add_argument("--momentum", type=float, default=0.9, help="momentum for sgd and rmsprop (default 0.9)")
    train.add_argument("--epochs", type=int, default=None, help="epochs (default 30 digits, 10 otherwise)")
    train.add_argument("--batch-size", type=int, default=None, help="minibatch size (default 32 digits, 128 otherwise)")
    train.add_argument("--dropout", type=float, default=0.0, help="dropout rate after each hidden layer (default 0)")
    train.add_argument("--no-standardize", action="store_true", help="skip input standardization")
    train.add_argument("--threads", type=int, default=None, help="threads (default: all available cores)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="default float32")
    train.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2],
                       help="0 silent, 1 progress bars (default), 2 a line per epoch")
    train.add_argument("--save", default=None, metavar="PATH", help="save the trained model (.npz)")
    return parser


def _load(dataset):
    from . import datasets

    if dataset == "digits":
        return datasets.load_digits()
    if dataset == "fashion-mnist":
        return datasets.load_fashion_mnist()
    return datasets.load_file(dataset)


def train(args):
    import fastnn as fnn

    defaults = DEFAULTS.get(args.dataset, DEFAULTS["fashion-mnist"])
    hidden_text = args.hidden or defaults["hidden"]
    try:
        hidden = [int(h) for h in hidden_text.split(",") if h.strip()]
    except ValueError:
        raise SystemExit(f"--hidden must be comma-separated integers, got {hidden_text!r}")
    epochs = defaults["epochs"] if args.epochs is None else args.epochs
    batch_size = defaults["batch_size"] if args.batch_size is None else args.batch_size
    lr = defaults["lr"] if args.lr is None else args.lr
    if args.threads is not None:
        fnn.set_num_threads(args.threads)

    (X_train, y_train), (X_test, y_test) = _load(args.dataset)
    if not args.no_standardize:
        scaler = fnn.Standardizer().fit(X_train)
        X_train, X_test = scaler.transform(X_train, args.dtype), scaler.transform(X_test, args.dtype)
    n_classes = len(np.unique(y_train))
    sizes = [X_train.shape[1]] + hidden
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        init = "he_normal" if args.activation in ("relu", "leaky_relu", "elu") else "glorot_uniform"
        layers.append(fnn.Dense(n_in, n_out, activation=args.activation, init=init))
        if args.dropout > 0:
            layers.append(fnn.Dropout(args.dropout))
    layers.append(fnn.Dense(sizes[-1], n_classes))
    opt_kwargs = {"lr": lr}
    if args.optimizer in ("sgd", "rmsprop"):
        opt_kwargs["momentum"] = args.momentum
    model = fnn.Sequential(layers, loss="softmax_cross_entropy",
                           optimizer=fnn.optim.get(args.optimizer, **opt_kwargs),
                           dtype=args.dtype, seed=args.seed)
    if args.verbose:
        print(f"fastnn {fnn.__version__}: {args.dataset}, {len(X_train)} training / {len(X_test)} test "
              f"samples, {fnn.get_num_threads()} thread(s)")
        model.summary()
    started = time.perf_counter()
    history = model.fit(X_train, y_train, epochs=epochs, batch_size=batch_size, verbose=args.verbose)
    elapsed = time.perf_counter() - started
    result = model.evaluate(X_test, y_test)
    epochs_run = len(history.epoch)
    print(f"trained {epochs_run} epochs in {elapsed:.2f} s ({elapsed / max(epochs_run, 1):.3f} s/epoch)")
    print(f"test loss {result['loss']:.4f}   test accuracy {result['accuracy']:.4f}")
    if args.save:
        fnn.save(model, args.save)
        print(f"saved to {args.save}")
    return result


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            train(args)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
