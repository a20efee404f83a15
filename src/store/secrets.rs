//! Secrets: put, get, metadata, renew, delete, and listing by prefix.

use super::*;

impl Store {
    /// Stores a secret. Returns its metadata and whether it was created.
    pub fn put(
        &self,
        key: &Key,
        value: SecretBytes,
        options: PutOptions,
    ) -> Result<(Meta, bool), StoreError> {
        let now = self.now();
        let wall_now = SystemTime::now();
        let deadline = self.deadline_after(options.ttl, now);
        let charge = secret_charge(key.as_str(), &value, &options.content_type);
        let mut expired = None;
        let mut replaced = None;
        let result = {
            let mut shard = lock(self.shard(key));
            let existing = shard.live(key, now, &self.shared, &mut expired);
            match (&options.precondition, &existing) {
                (Precondition::Absent, Some(_)) => {
                    return Err(StoreError::PreconditionFailed("the key already exists"))
                }
                (Precondition::Present | Precondition::Revision(_), None) => {
                    return Err(StoreError::PreconditionFailed("the key does not exist"))
                }
                (Precondition::Revision(expected), Some(slot)) if slot.revision() != *expected => {
                    return Err(StoreError::PreconditionFailed(
                        "the ETag does not match the current value",
                    ))
                }
                (_, Some(slot)) if slot.kind() == Kind::List => {
                    return Err(StoreError::WrongKind {
                        expected: Kind::Secret,
                        found: Kind::List,
                    })
                }
                _ => {}
            }
            // A replaced value a response still holds stays charged.
            let (old_charge, held, created_at, version) =
                existing.map_or((0, 0, wall_now, 0), |slot| {
                    let held = held_elsewhere(slot);
                    let created_at = slot.created_at.into();
                    (
                        slot.charge(slot.key()) - held,
                        held,
                        created_at,
                        slot.version(),
                    )
                });
            self.charge(old_charge, charge)?;
            let revision = self.revision();
            let journaled = self.journal(|| Change {
                key,
                seq: revision,
                op: ChangeOp::Put {
                    value: &value,
                    revision,
                    version: version + 1,
                    created_at,
                    updated_at: wall_now,
                    expires_at: deadline.wall_clock(now, wall_now),
                    reads_left: options.max_reads,
                    content_type: options.content_type.clone(),
                },
            });
            if let Err(error) = journaled {
                self.uncharge(old_charge, charge);
                return Err(error);
            }
            let fields = Fields {
                deadline,
                created_at: created_at.into(),
                updated_at: wall_now.into(),
                version: version + 1,
                revision,
                seq: revision,
            };
            let entry = Entry::secret(value, options.content_type, options.max_reads, &fields);
            let meta = entry.meta(key.clone(), now, wall_now);
            if let Some(old) = shard.insert(Slot::new(key, entry)) {
                if held > 0 {
                    self.shared.linger(&old, held);
                }
                replaced = Some(old);
            } else {
                self.shared.entries.fetch_add(1, Ordering::Relaxed);
            }
            (meta, replaced.is_none())
        };
        self.schedule(deadline);
        self.shared.watchers.changed(key.as_str());
        // `replaced` and `expired` are dropped (and wiped) here, outside the lock.
        Ok(result)
    }

    /// Reads a secret. With `consume`, counts the read against `max_reads`;
    /// the read that uses up the last one removes the secret in the same
    /// critical section, so concurrent readers can never both get it.
    pub fn get(&self, key: &Key, consume: bool) -> Result<(SecretRef, Meta), StoreError> {
        let now = self.now();
        let wall_now = SystemTime::now();
        let mut expired = None;
        let mut consumed = None;
        let result = {
            let mut shard = lock(self.shard(key));
            let slot = shard
                .live(key, now, &self.shared, &mut expired)
                .ok_or(StoreError::NotFound)?;
            if slot.kind() == Kind::List {
                return Err(StoreError::WrongKind {
                    expected: Kind::Secret,
                    found: Kind::List,
                });
            }
            let bytes = SecretRef::new(slot);
            if let (true, Some(reads_left)) = (consume, slot.reads_left()) {
                // A counted read is a change: journaled, or a restarted
                // server would serve a read-once secret again.
                let left = reads_left.load(Ordering::Relaxed).saturating_sub(1);
                if let Some(seq) = self.journal_seq(|seq| Change {
                    key,
                    seq,
                    op: ChangeOp::Read { reads_left: left },
                })? {
                    slot.set_seq(seq);
                }
                reads_left.store(left, Ordering::Relaxed);
            }
            let meta = slot.meta(key.clone(), now, wall_now);
            if consume && meta.reads_left == Some(0) {
                consumed = shard.remove(key.as_str());
            }
            (bytes, meta)
        };
        if let Some(slot) = &consumed {
            self.shared.release(slot);
            self.shared.watchers.changed(key.as_str());
        }
        drop(expired);
        Ok(result)
    }

    /// Metadata of a key of either kind.
    pub fn meta(&self, key: &Key) -> Result<Meta, StoreError> {
        let now = self.now();
        let mut expired = None;
        let mut shard = lock(self.shard(key));
        let meta = shard
            .live(key, now, &self.shared, &mut expired)
            .map(|slot| slot.meta(key.clone(), now, SystemTime::now()))
            .ok_or(StoreError::NotFound);
        drop(shard);
        meta
    }

    /// Sets a new time to live (longer or shorter) on a key of either kind.
    pub fn renew(&self, key: &Key, ttl: Duration) -> Result<Meta, StoreError> {
        let now = self.now();
        let wall_now = SystemTime::now();
        let deadline = self.deadline_after(ttl, now);
        let mut expired = None;
        let meta = {
            let mut shard = lock(self.shard(key));
            let slot = shard
                .live(key, now, &self.shared, &mut expired)
                .ok_or(StoreError::NotFound)?;
            if let Some(seq) = self.journal_seq(|seq| Change {
                key,
                seq,
                op: ChangeOp::Renew {
                    expires_at: deadline.wall_clock(now, wall_now),
                    updated_at: wall_now,
                },
            })? {
                slot.set_seq(seq);
            }
            slot.deadline.store(deadline.0, Ordering::Relaxed);
            slot.set_updated_at(wall_now);
            let meta = slot.meta(key.clone(), now, wall_now);
            let weak = slot.downgrade();
            shard.set_deadline(weak, deadline);
            meta
        };
        self.schedule(deadline);
        Ok(meta)
    }

    /// Removes and wipes a key of either kind. Returns what it was.
    pub fn delete(&self, key: &Key) -> Result<Kind, StoreError> {
        let now = self.now();
        let mut expired = None;
        let removed = {
            let mut shard = lock(self.shard(key));
            if shard.live(key, now, &self.shared, &mut expired).is_none() {
                None
            } else {
                self.journal_seq(|seq| Change {
                    key,
                    seq,
                    op: ChangeOp::Delete,
                })?;
                shard.remove(key.as_str())
            }
        };
        if let Some(slot) = &removed {
            self.shared.release(slot);
            self.shared.watchers.changed(key.as_str());
        }
        drop(expired);
        removed.map(|slot| slot.kind()).ok_or(StoreError::NotFound)
    }

    /// Lists metadata of live keys starting with `prefix`, in key order,
    /// strictly after `after`, at most `limit`. Returns the page and the key
    /// to continue after when more remain.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Meta>, Option<Key>) {
        self.list_filtered(prefix, after, limit, |_| true)
    }

    /// Like [`Store::list`], keeping only keys for which `visible` holds (the
    /// policy's `list` permission), so a page is never short because of it.
    pub fn list_filtered(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        visible: impl Fn(&Key) -> bool,
    ) -> (Vec<Meta>, Option<Key>) {
        let now = self.now();
        let wall_now = SystemTime::now();
        let lower: Bound<&str> = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        // Each shard's candidates are merged into `page` as they come,
        // kept sorted and cut to `limit + 1`: once it is full, a later shard
        // is scanned only up to the largest key still in it, so most shards
        // build few entries' metadata (each needs its own `Key`).
        let mut page: Vec<Meta> = Vec::new();
        for shard in self.shared.shards.iter() {
            let bound = (page.len() > limit).then(|| page[limit].key.clone());
            let shard = lock(shard);
            let range = shard.entries.range::<str, _>((lower, Bound::Unbounded));
            page.extend(
                range
                    .take_while(|slot| {
                        slot.key().starts_with(prefix)
                            && bound
                                .as_ref()
                                .is_none_or(|bound| slot.key() < bound.as_str())
                    })
                    .filter(|slot| slot.deadline() > now)
                    .map(|slot| (slot, slot.owned_key()))
                    .filter(|(_, key)| visible(key))
                    .take(limit.saturating_add(1))
                    .map(|(slot, key)| slot.meta(key, now, wall_now)),
            );
            drop(shard);
            page.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            page.truncate(limit.saturating_add(1));
        }
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|meta| meta.key.clone())
        } else {
            None
        };
        (page, next)
    }
}
