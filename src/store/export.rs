//! Every record out (snapshots) and back in (restore at startup).

use super::*;

impl Store {
    /// Every live entry, owned, in no particular order: what a snapshot
    /// writes. Shards are locked one at a time, never two at once, and each
    /// only long enough to copy its entries' metadata and values; the
    /// values (secrets and list items) are copied into short-lived heap
    /// buffers, wiped as they are freed, so that writing needs no room in a
    /// full arena and holds no entry (an entry's value is its block's, and
    /// a held block would keep a deleted secret's bytes). Each record is
    /// consistent with its `seq`: it holds exactly the changes to its key
    /// numbered up to it.
    pub fn export(&self) -> Vec<Record> {
        let mut all = Vec::new();
        let _ = self.export_each(|records| {
            all.extend(records);
            Ok::<(), std::convert::Infallible>(())
        });
        all
    }

    /// Like [`Store::export`], one shard at a time: `visit` gets each
    /// shard's records after that shard's lock is released, so a snapshot
    /// holds at most one shard's copies (and keeps no deleted secret alive)
    /// while it writes, instead of the whole store's.
    pub fn export_each<E>(
        &self,
        mut visit: impl FnMut(Vec<Record>) -> Result<(), E>,
    ) -> Result<(), E> {
        let now = self.now();
        let wall_now = SystemTime::now();
        for shard in self.shared.shards.iter() {
            let records: Vec<Record> = {
                let shard = lock(shard);
                shard
                    .entries
                    .iter()
                    .filter(|slot| slot.deadline() > now)
                    .map(|slot| Record {
                        key: slot.owned_key(),
                        value: match (&slot.value, slot.list()) {
                            (Some(bytes), _) => {
                                RecordValue::Secret(Arc::new(bytes.transient_copy()))
                            }
                            (None, list) => {
                                RecordValue::List(list.map_or_else(VecDeque::new, |list| {
                                    list.items.iter().map(SecretBytes::transient_copy).collect()
                                }))
                            }
                        },
                        seq: slot.seq(),
                        revision: slot.revision(),
                        version: slot.version(),
                        created_at: slot.created_at.into(),
                        updated_at: slot.updated_at().into(),
                        expires_at: slot.deadline().wall_clock(now, wall_now),
                        reads_left: slot.reads_left().map(|left| left.load(Ordering::Relaxed)),
                        content_type: slot.media_type().cloned(),
                    })
                    .collect()
            };
            visit(records)?;
        }
        Ok(())
    }

    /// Puts restored records into the store (at startup, before serving;
    /// nothing is journaled). Records whose deadline has passed are dropped,
    /// and so are a secret with no reads left and an empty list. The
    /// revision counter moves past every restored `seq`, so new changes sort
    /// after them. Returns how many were restored and how many had expired.
    pub fn import(
        &self,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<(u64, u64), StoreError> {
        let now = self.now();
        let wall_now = SystemTime::now();
        let (mut restored, mut expired) = (0, 0);
        let mut earliest: Option<Tick> = None;
        for record in records {
            let Ok(ahead) = record.expires_at.duration_since(wall_now) else {
                expired += 1;
                continue;
            };
            if ahead.is_zero()
                || record.reads_left == Some(0)
                || matches!(&record.value, RecordValue::List(items) if items.is_empty())
            {
                expired += 1;
                continue;
            }
            let key_bytes = record.key.as_str().len() as u64;
            let deadline = self.deadline_after(ahead, now);
            let fields = Fields {
                deadline,
                created_at: record.created_at.into(),
                updated_at: record.updated_at.into(),
                version: record.version,
                revision: record.revision,
                seq: record.seq,
            };
            let (entry, charge) = match record.value {
                RecordValue::Secret(bytes) => {
                    // The snapshot format makes the type optional; a secret
                    // record without one gets the default, as a secret
                    // written without one does.
                    let media_type = record.content_type.unwrap_or(MediaType::Default);
                    let charge = secret_charge(record.key.as_str(), &bytes, &media_type);
                    // Into the arena, if it is a transient copy (an
                    // exported record) or still shared.
                    let bytes = Arc::try_unwrap(bytes)
                        .map_or_else(
                            |shared| SecretBytes::copy_from(shared.expose()),
                            SecretBytes::into_stored,
                        )
                        .map_err(|_| StoreError::BudgetExceeded {
                            budget: self.shared.budget,
                            used: self.shared.used.load(Ordering::Relaxed),
                        })?;
                    let entry = Entry::secret(bytes, media_type, record.reads_left, &fields);
                    (entry, charge)
                }
                RecordValue::List(items) => {
                    let charge = ITEM_OVERHEAD
                        + key_bytes
                        + items
                            .iter()
                            .map(|item| ITEM_OVERHEAD + item.len() as u64)
                            .sum::<u64>();
                    (Entry::new_list(List { items, charge }, &fields), charge)
                }
            };
            self.charge(0, charge)?;
            self.shared.next_revision.fetch_max(
                record.seq.max(record.revision).saturating_add(1),
                Ordering::Relaxed,
            );
            let replaced = {
                let mut shard = lock(self.shard(&record.key));
                shard.insert(Slot::new(&record.key, entry))
            };
            match &replaced {
                Some(old) => self
                    .shared
                    .used
                    .fetch_sub(old.charge(old.key()), Ordering::Relaxed),
                None => self.shared.entries.fetch_add(1, Ordering::Relaxed),
            };
            earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
            restored += 1;
        }
        if let Some(deadline) = earliest {
            self.schedule(deadline);
        }
        Ok((restored, expired))
    }
}
