-- At most one active managed signing key per tenant. Before this index, two first token mints
-- of a tenant at the same moment each made one. All but the newest such key are revoked first
-- (as of their creation: they should not have existed); tokens signed with them are refused and
-- the tenant's backend mints fresh ones.
UPDATE signing_keys SET revoked_at = created_at
 WHERE managed = 1 AND revoked_at IS NULL
   AND id <> (SELECT k.id FROM signing_keys k
               WHERE k.tenant_id = signing_keys.tenant_id AND k.managed = 1
                 AND k.revoked_at IS NULL
               ORDER BY k.created_at DESC, k.id LIMIT 1);
CREATE UNIQUE INDEX signing_keys_one_managed ON signing_keys (tenant_id)
 WHERE managed = 1 AND revoked_at IS NULL;
