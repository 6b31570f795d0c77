"""``carta-hub``: the operator's command line (``check``, ``cephfs-volume``)."""

import argparse
import asyncio
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carta-hub", description="carta-hub operator tools")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="what would break these users' CARTA spawns")
    check.add_argument(
        "-f",
        "--config",
        default="jupyterhub_config.py",
        help="the Hub's configuration file (default: %(default)s)",
    )
    check.add_argument("users", nargs="+", metavar="USER", help="JupyterHub usernames")
    ceph = commands.add_parser(
        "cephfs-volume",
        help="print the static ceph-csi volume and claim of the CephFS tree",
        description="Print a ceph-csi PersistentVolume and its PersistentVolumeClaim for "
        "c.CartaStorage.mounts entries with `pvc: CLAIM`; pipe to `kubectl apply -f -`.",
    )
    ceph.add_argument("--cluster-id", required=True, help="the Ceph cluster's fsid")
    ceph.add_argument("--namespace", required=True, help="the chart's namespace")
    ceph.add_argument("--fs-name", default="cephfs", help="CephFS name (default: %(default)s)")
    ceph.add_argument(
        "--secret",
        default="ceph-csi/csi-cephfs-secret",
        help="NAMESPACE/NAME of ceph-csi's CephX secret (default: %(default)s)",
    )
    ceph.add_argument("--claim", default="cephfs", help="claim name (default: %(default)s)")
    ceph.add_argument("--root", default="/", help="path mounted (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "check":
        from carta_hub.hub.check import report, run_checks

        return 1 if report(asyncio.run(run_checks(args.config, args.users))) else 0
    from carta_hub.hub.cephfs import manifests

    try:
        print(
            manifests(
                args.cluster_id, args.namespace, args.fs_name, args.secret, args.claim, args.root
            ),
            end="",
        )
    except ValueError as e:
        parser.error(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
