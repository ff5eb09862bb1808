"""Stream backups: the snapshot protocol (`snapshot`), where backups live (`s3`: a bucket, `folder`: a plain
folder in the nats CLI's layout) and the operations on them (`service`: backup, restore, prune, verify)."""
