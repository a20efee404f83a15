//! One-time-credential lists: push and pop.

use super::*;

impl Store {
    /// Appends an item to a list, creating the list with `ttl` if absent.
    pub fn push(
        &self,
        key: &Key,
        item: SecretBytes,
        ttl: Duration,
    ) -> Result<(Meta, bool), StoreError> {
        let now = self.now();
        let wall_now = SystemTime::now();
        let item_charge = ITEM_OVERHEAD + item.len() as u64;
        let mut expired = None;
        let mut created_deadline = None;
        let result = {
            let mut shard = lock(self.shard(key));
            let revision = self.revision();
            match shard.live(key, now, &self.shared, &mut expired) {
                Some(slot) => {
                    if slot.kind() != Kind::List {
                        return Err(StoreError::WrongKind {
                            expected: Kind::List,
                            found: Kind::Secret,
                        });
                    }
                    self.charge(0, item_charge)?;
                    let journaled = self.journal(|| Change {
                        key,
                        seq: revision,
                        op: ChangeOp::Push {
                            item: &item,
                            created: false,
                            revision,
                            version: slot.version() + 1,
                            created_at: slot.created_at.into(),
                            updated_at: wall_now,
                            expires_at: slot.deadline().wall_clock(now, wall_now),
                        },
                    });
                    if let Err(error) = journaled {
                        self.uncharge(0, item_charge);
                        return Err(error);
                    }
                    if let Some(mut list) = slot.list() {
                        list.items.push_back(item);
                        list.charge += item_charge;
                    }
                    slot.changed(revision, wall_now);
                    (slot.meta(key.clone(), now, wall_now), false)
                }
                None => {
                    let charge = ITEM_OVERHEAD + key.as_str().len() as u64 + item_charge;
                    self.charge(0, charge)?;
                    let deadline = self.deadline_after(ttl, now);
                    let journaled = self.journal(|| Change {
                        key,
                        seq: revision,
                        op: ChangeOp::Push {
                            item: &item,
                            created: true,
                            revision,
                            version: 1,
                            created_at: wall_now,
                            updated_at: wall_now,
                            expires_at: deadline.wall_clock(now, wall_now),
                        },
                    });
                    if let Err(error) = journaled {
                        self.uncharge(0, charge);
                        return Err(error);
                    }
                    let list = List {
                        items: VecDeque::from([item]),
                        charge,
                    };
                    let fields = Fields {
                        deadline,
                        created_at: wall_now.into(),
                        updated_at: wall_now.into(),
                        version: 1,
                        revision,
                        seq: revision,
                    };
                    let entry = Entry::new_list(list, &fields);
                    let meta = entry.meta(key.clone(), now, wall_now);
                    shard.insert(Slot::new(key, entry));
                    self.shared.entries.fetch_add(1, Ordering::Relaxed);
                    created_deadline = Some(deadline);
                    (meta, true)
                }
            }
        };
        if let Some(deadline) = created_deadline {
            self.schedule(deadline);
        }
        Ok(result)
    }

    /// Removes and returns one item of a list; popping the last item deletes
    /// the list. Returns the item and the number of items left.
    pub fn pop(&self, key: &Key, end: End) -> Result<(SecretBytes, u64), StoreError> {
        let now = self.now();
        let wall_now = SystemTime::now();
        let mut expired = None;
        let mut emptied = None;
        let result = {
            let mut shard = lock(self.shard(key));
            let revision = self.revision();
            let slot = shard
                .live(key, now, &self.shared, &mut expired)
                .ok_or(StoreError::NotFound)?;
            let Some(mut list) = slot.list() else {
                return Err(StoreError::WrongKind {
                    expected: Kind::List,
                    found: Kind::Secret,
                });
            };
            if list.items.is_empty() {
                return Err(StoreError::NotFound);
            }
            self.journal(|| Change {
                key,
                seq: revision,
                op: ChangeOp::Pop {
                    end,
                    revision,
                    version: slot.version() + 1,
                    updated_at: wall_now,
                },
            })?;
            let item = match end {
                End::Newest => list.items.pop_back(),
                End::Oldest => list.items.pop_front(),
            }
            .ok_or(StoreError::NotFound)?;
            let left = list.items.len() as u64;
            let item_charge = ITEM_OVERHEAD + item.len() as u64;
            list.charge -= item_charge;
            drop(list);
            slot.changed(revision, wall_now);
            self.shared.used.fetch_sub(item_charge, Ordering::Relaxed);
            if left == 0 {
                emptied = shard.remove(key.as_str());
            }
            (item, left)
        };
        if let Some(slot) = &emptied {
            self.shared.release(slot);
        }
        drop(expired);
        Ok(result)
    }
}
