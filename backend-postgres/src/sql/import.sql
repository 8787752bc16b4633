INSERT INTO __SCHEMA__.events (stream_id, version, event_id, event_type, schema_version, content_type,
                               content_encoding, metadata, payload, recorded_at)
SELECT $1, u.v, u.id, u.ty, u.sv, u.ct, u.ce, u.md, u.pl,
       timestamptz 'epoch' + u.ms * interval '1 millisecond'
FROM unnest($2::bigint[], $3::uuid[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[],
            $9::bytea[], $10::bigint[]) WITH ORDINALITY AS u(v, id, ty, sv, ct, ce, md, pl, ms, ord)
ORDER BY u.ord
